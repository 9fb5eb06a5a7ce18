"""Accounts: tokens, keypairs, the audit trail and idempotency keys."""
