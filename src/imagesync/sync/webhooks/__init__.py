"""Signed webhooks: an account's endpoints are called when one of its sync jobs ends
(`sync.job.finished`) and when a product of one fails (`sync.product.failed`), following
the Standard Webhooks conventions (`signing`). Each call is a delivery, a queued task
retried with backoff for about a day (`deliver`); an endpoint whose delivery still fails
after that is disabled."""
