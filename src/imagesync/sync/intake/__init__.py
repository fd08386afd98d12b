"""Taking sync requests: validating them, recording the job and applying at once what
needs no download (`submit`), the dry run (`dry_run`), and the request examples the
OpenAPI document shows (`examples`)."""
