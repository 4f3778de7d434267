-- In 0001_init.sql on PostgreSQL (its first version had this schema already).
SELECT 1;
