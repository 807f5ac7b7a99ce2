"""The worker: takes numbers from the Redis list "jobs", records each
result in PostgreSQL, and publishes it (with the table's row count) under
"result:N" in Redis for the web service to show."""

import os

import psycopg2
import redis

cache = redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]))
db = psycopg2.connect(os.environ["DATABASE_URL"])
db.autocommit = True
with db.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS results (n bigint, squared bigint)")
cache.set("worker", "ready")
print("worker: waiting for jobs", flush=True)

while True:
    item = cache.brpop("jobs", timeout=5)
    if item is None:
        continue
    n = int(item[1])
    with db.cursor() as cur:
        cur.execute("INSERT INTO results VALUES (%s, %s)", (n, n * n))
        cur.execute("SELECT count(*) FROM results")
        rows = cur.fetchone()[0]
    cache.set(f"result:{n}", f"{n}^2={n * n} (db rows: {rows})")
    print(f"worker: {n} done", flush=True)
