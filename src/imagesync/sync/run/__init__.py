"""Running one queued product: planning it, downloading what was never seen
(`download`), and applying the whole new image set in one transaction (`apply`).
`product.run_product` is what the queue's task calls."""
