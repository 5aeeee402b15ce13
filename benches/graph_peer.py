#!/usr/bin/env python3
"""The plain loader `cargo bench --bench graph` measures wf against: the official Neo4j Python
driver (PyPI `neo4j`, which sets TCP_NODELAY) loading the same subgraph shape into a fresh
database in one transaction, nodes with UNWIND ... CREATE in batches of 10,000 and relationships
with UNWIND ... MATCH ... MATCH ... CREATE on the key index. Prints the seconds of the load.

Usage: graph_peer.py <bolt host:port> <user> <password> <database> <nodes>
"""
import sys
import time

from neo4j import GraphDatabase

BATCH = 10_000


def main():
    url, user, password, db, n = sys.argv[1:6]
    half = int(n) // 2
    students = [
        {"id": i, "name": f"Student number {i}", "score": i / 7.0, "district_id": 1}
        for i in range(half)
    ]
    sections = [
        {"id": half + i, "name": f"Section number {half + i}", "score": (half + i) / 7.0}
        for i in range(half)
    ]
    rels = [
        {"s": i, "e": half + (i * 7 + k * 13_001) % half, "t": k}
        for i in range(half)
        for k in range(4)
    ]
    driver = GraphDatabase.driver(f"bolt://{url}", auth=(user, password))
    with driver.session(database=db) as s:
        for label in ("Student", "Section"):
            s.run(f"CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.id)").consume()
    t = time.monotonic()
    with driver.session(database=db) as s:
        tx = s.begin_transaction()
        for label, rows in (("Student", students), ("Section", sections)):
            for i in range(0, len(rows), BATCH):
                q = f"UNWIND $rows AS r CREATE (n:{label}) SET n = r"
                tx.run(q, rows=rows[i : i + BATCH]).consume()
        for i in range(0, len(rels), BATCH):
            q = (
                "UNWIND $rows AS r MATCH (a:Student {id: r.s}) MATCH (b:Section {id: r.e}) "
                "CREATE (a)-[:ENROLLED_IN {term: r.t}]->(b)"
            )
            tx.run(q, rows=rels[i : i + BATCH]).consume()
        tx.commit()
    print(f"{time.monotonic() - t:.3f}")
    driver.close()


if __name__ == "__main__":
    main()
