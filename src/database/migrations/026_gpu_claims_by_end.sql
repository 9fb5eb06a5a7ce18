-- A conflict's offer (issue 23) reads the windows not over by its start, by GPU: an index on
-- the end that holds the GPU and the start too answers that from the index alone, a few rows
-- of a ledger of thousands, where the (host, gpu_id, start_at) index walked every claim.
DROP INDEX gpu_claims_end;
CREATE INDEX gpu_claims_end ON gpu_claims (end_at, host, gpu_id, start_at);
