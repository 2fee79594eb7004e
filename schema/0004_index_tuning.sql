-- Every message commit wrote a page of events_by_time, used only by the pruning
-- of old events every ten minutes: that now finds its range of event ids from
-- the oldest end of the table instead (event ids grow with time).
DROP INDEX events_by_time;
-- The server looks every two seconds for sessions revoked by another process
-- (`lanchat reset-password` beside it): only revoked sessions are indexed.
CREATE INDEX sessions_by_revoked_at ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
-- messages_by_sender served only search's `from` filter, which narrows what the
-- word index or the newest-first scan already finds; every message paid an
-- index entry (and a page of the WAL) for it.
DROP INDEX messages_by_sender;
