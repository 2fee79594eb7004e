-- Searches in scripts written without spaces (Chinese, Japanese, Thai...) ran
-- as a LIKE scan of every readable message (0.3-0.7 s at 1M messages for a word
-- that is absent). messages_cjk indexes, for the messages that contain such
-- scripts only, every pair of neighbouring characters of each run of them, and
-- the run's last character (search::grams): a term of two or more characters
-- is the phrase of its pairs, a single character a prefix query (the 5-digit
-- prefix index). Characters are written as 5 hex digits of their code point, so
-- the ascii tokenizer sees plain words. Contentless: the text is in messages,
-- and contentless_delete lets edits and deletes remove a row by its id. It is
-- fed with messages_fts, from the same watermark; what is already indexed there
-- is added here now.
CREATE VIRTUAL TABLE messages_cjk USING fts5(
    grams,
    content = '',
    contentless_delete = 1,
    tokenize = 'ascii',
    prefix = '5'
);
INSERT INTO messages_cjk (rowid, grams)
    SELECT id, lanchat_grams(body) FROM messages
    WHERE id <= (SELECT indexed_upto FROM search_index_state WHERE id = 1)
      AND kind = 'text' AND deleted_at IS NULL AND lanchat_grams(body) IS NOT NULL;
