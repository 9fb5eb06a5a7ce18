-- A token made by a member token may no longer outlive its maker (revoking a member token revokes
-- every token made from it; a member-made token expires by its maker's expiry at the latest).
-- Tokens made before that rule existed are brought under it: those whose member maker, or a
-- member maker further up, is revoked are revoked with it, and expiries are clamped to the
-- makers'. Tokens made by admin tokens stand on their own and are left as they are.
WITH RECURSIVE fallen (id, revoked_at) AS (
    SELECT id, revoked_at FROM tokens WHERE revoked_at IS NOT NULL AND role = 'member'
    UNION
    SELECT t.id, f.revoked_at FROM tokens AS t JOIN fallen AS f ON t.created_by = f.id
        JOIN tokens AS maker ON maker.id = f.id WHERE maker.role = 'member'
)
UPDATE tokens SET revoked_at = (SELECT min(f.revoked_at) FROM fallen AS f WHERE f.id = tokens.id)
    WHERE revoked_at IS NULL AND id IN (SELECT id FROM fallen);
WITH RECURSIVE bound (id, expires_at) AS (
    SELECT id, expires_at FROM tokens WHERE expires_at IS NOT NULL AND role = 'member'
    UNION
    SELECT t.id, b.expires_at FROM tokens AS t JOIN bound AS b ON t.created_by = b.id
        JOIN tokens AS maker ON maker.id = b.id WHERE maker.role = 'member'
)
UPDATE tokens SET expires_at = (SELECT min(b.expires_at) FROM bound AS b WHERE b.id = tokens.id)
    WHERE id IN (SELECT id FROM bound)
    AND (expires_at IS NULL
         OR expires_at > (SELECT min(b.expires_at) FROM bound AS b WHERE b.id = tokens.id));
