"""The code under test: a small inventory kept in PostgreSQL."""


def create_schema(conn):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS items ("
            " sku text PRIMARY KEY,"
            " qty integer NOT NULL CHECK (qty >= 0))"
        )


def add(conn, sku, qty):
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (sku, qty) VALUES (%s, %s)"
            " ON CONFLICT (sku) DO UPDATE SET qty = items.qty + EXCLUDED.qty",
            (sku, qty),
        )


def take(conn, sku, qty):
    with conn.cursor() as cur:
        cur.execute("UPDATE items SET qty = qty - %s WHERE sku = %s", (qty, sku))
        if cur.rowcount != 1:
            raise KeyError(sku)


def stock(conn, sku):
    with conn.cursor() as cur:
        cur.execute("SELECT qty FROM items WHERE sku = %s", (sku,))
        row = cur.fetchone()
        return row[0] if row else 0
