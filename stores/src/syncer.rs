//! Background syncing of a file being written, so closing it does not wait for all its data.

/// Bytes written between background syncs.
const SYNC_EVERY: u64 = 32 << 20;

/// Syncs a growing file from a background thread every `SYNC_EVERY` bytes, so the sync in
/// `finish` has little left to flush (for a large file it cost more than writing it).
pub(crate) struct Syncer {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    marked: u64,
    every: u64,
}

impl Default for Syncer {
    fn default() -> Syncer {
        Syncer {
            tx: None,
            handle: None,
            marked: 0,
            every: SYNC_EVERY,
        }
    }
}

impl Syncer {
    /// Asks for a sync when `bytes` passed the next mark; never blocks the writer.
    pub(crate) fn wrote(&mut self, file: &std::fs::File, bytes: u64) -> std::io::Result<()> {
        if bytes < self.marked + self.every {
            return Ok(());
        }
        self.marked = bytes;
        if self.tx.is_none() {
            let f = file.try_clone()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            self.handle = Some(std::thread::spawn(move || {
                for () in rx {
                    f.sync_data()?;
                }
                Ok(())
            }));
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
        Ok(())
    }

    /// Stops the thread; an error of any background sync is returned here.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the background sync thread panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn syncs_in_the_background_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut s = Syncer {
            every: 1000,
            ..Syncer::default()
        };
        s.wrote(&f, 10).unwrap();
        assert!(s.handle.is_none(), "small files never start a thread");
        for i in 1..=5u64 {
            f.write_all(&[7u8; 1000]).unwrap();
            s.wrote(&f, i * 1000).unwrap();
        }
        assert!(s.handle.is_some() && s.marked == 5000);
        s.finish().unwrap();
        assert!(s.tx.is_none() && s.handle.is_none());
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 5000);
    }
}
