-- The writer indexes new messages for search in transactions of its own, up to
-- a thousand at a time, instead of in the commit of each send (db::writer's
-- background step, search::index_pending): with one message per commit, FTS5
-- wrote one index segment per message. Messages with id <= indexed_upto are in
-- messages_fts with their current body; later ones are indexed at the next
-- quiet moment (within seconds), or at once when someone searches. Everything
-- before this migration was already indexed.
CREATE TABLE search_index_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_upto INTEGER NOT NULL
);
INSERT INTO search_index_state (id, indexed_upto)
    VALUES (1, COALESCE((SELECT MAX(id) FROM messages), 0));
