"""Server-rendered admin pages under /admin: an account's products, their images and
variants, and its syncs, for people who would rather look than read JSON. Read-only but
for signing in and out."""
