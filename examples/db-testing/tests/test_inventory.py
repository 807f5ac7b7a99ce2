"""Tests against the real PostgreSQL service (each in a rolled-back
transaction, so they do not depend on each other)."""

import os
import unittest

import psycopg2

import inventory


class InventoryTest(unittest.TestCase):
    def setUp(self):
        self.conn = psycopg2.connect(os.environ["DATABASE_URL"])
        inventory.create_schema(self.conn)

    def tearDown(self):
        self.conn.rollback()
        self.conn.close()

    def test_add_accumulates(self):
        inventory.add(self.conn, "apple", 3)
        inventory.add(self.conn, "apple", 4)
        self.assertEqual(inventory.stock(self.conn, "apple"), 7)

    def test_take_reduces_stock(self):
        inventory.add(self.conn, "pear", 5)
        inventory.take(self.conn, "pear", 2)
        self.assertEqual(inventory.stock(self.conn, "pear"), 3)

    def test_cannot_go_negative(self):
        inventory.add(self.conn, "plum", 1)
        with self.assertRaises(psycopg2.errors.CheckViolation):
            inventory.take(self.conn, "plum", 2)

    def test_unknown_item(self):
        with self.assertRaises(KeyError):
            inventory.take(self.conn, "kiwi", 1)
        self.assertEqual(inventory.stock(self.conn, "kiwi"), 0)

    def test_server_is_postgres(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT version()")
            self.assertIn("PostgreSQL", cur.fetchone()[0])


if __name__ == "__main__":
    unittest.main()
