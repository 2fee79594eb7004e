-- The writer now keeps messages_fts itself, in the same transaction as the change
-- but after all of the batch's jobs (db::writer, WriteCtx::before_commit). Each job
-- runs in its own savepoint and FTS5 flushes its pending terms to disk at every
-- savepoint release: with these triggers every message wrote its own index segment,
-- which FTS5 then had to merge (a third of the writer's time under load).
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;
