"""Admin and self-service routes: `/admin/...` (tenants, users, keys, usage, audit; role admin) and
`/v1/usage`, `/v1/keys` (a caller's own usage and keys)."""
