-- Tokens made through the API remember the token that made them: a member lists and revokes
-- only its own token and those it made. Tokens made on the command line have none.
ALTER TABLE tokens ADD COLUMN created_by TEXT;
CREATE INDEX tokens_created_by ON tokens (created_by);
