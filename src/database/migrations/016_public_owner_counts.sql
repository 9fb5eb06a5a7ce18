-- Public images belong to no project: they move to the reserved owner `_public`
-- (vocabulary.PUBLIC_IMAGES_OWNER), a name no project can have, so no member token inherits an
-- admin's public image (uploads into it, deletes it). Public names are unique on their own, so
-- the move cannot clash. An admin's import of a public image is a task of that owner too.
UPDATE tasks SET project = '_public'
    WHERE image_id IN (SELECT id FROM images WHERE visibility = 'public');
UPDATE images SET project = '_public' WHERE visibility = 'public';
-- The audit trail filed an admin's requests under the admin token's own project whenever the
-- request did not name one, so that project's members read them. Rows about public images move
-- to `_public`; the other rows of admin tokens that did not clearly touch their own project
-- (flavors, hosts, GPUs, refusals, image and keypair calls whose target is not the project's)
-- move to no project, which only admins read.
UPDATE audit_events SET project = '_public'
    WHERE resource_id IN (SELECT id FROM images WHERE visibility = 'public')
       OR resource_id IN (SELECT t.id FROM tasks AS t JOIN images AS i ON i.id = t.image_id
                          WHERE i.visibility = 'public');
UPDATE audit_events SET project = NULL
    WHERE project IS NOT NULL AND project != '_public'
      AND token_id IN (SELECT id FROM tokens
                       WHERE role = 'admin' AND tokens.project = audit_events.project)
      AND (status >= 400
           OR path LIKE '/v1/flavors%' OR path LIKE '/v1/hosts%' OR path LIKE '/v1/gpus%'
           OR ((path LIKE '/v1/images%' OR path LIKE '/v1/keypairs%')
               AND coalesce(resource_id, '') != audit_events.project
               AND coalesce(resource_id, '') NOT IN (
                   SELECT id FROM images WHERE images.project = audit_events.project)));
-- Count limits per project: images (any status), keypairs, and live tokens made by its members.
-- NULL is unlimited; existing projects get no such limit until an admin sets one (as disk_gb
-- and images_gb came); new ones start with IAAS_DEFAULT_QUOTA_IMAGES, _KEYPAIRS, _TOKENS.
ALTER TABLE projects ADD COLUMN quota_images INTEGER;
ALTER TABLE projects ADD COLUMN quota_keypairs INTEGER;
ALTER TABLE projects ADD COLUMN quota_tokens INTEGER;
CREATE INDEX tokens_project ON tokens (project, created_at);
