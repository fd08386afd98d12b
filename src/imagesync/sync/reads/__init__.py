"""What image sync answers without changing anything: jobs (`jobs`), a product's images
and their files (`images`), the admin pages' figures (`overview`) and `imagesync queue`'s
(`status`)."""
