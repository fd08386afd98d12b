"""Image sync: TRAEDE's `POST /products/images/sync` and what follows it.

- `core/`: the pure planner (what a new image list means against what a product has),
  file names, and the codes of errors and warnings;
- `intake/`: taking a request (`submit`) and the dry run;
- `run/`: running a queued product (`product`), its downloads and its apply;
- `reads/`: jobs, images and files, the admin pages' figures, `imagesync queue`'s;
- beside them: the routes (`api`), the bodies (`schemas`, with their `examples`), the
  tables (`models`), all SQL (`repository`), results (`results`) and the task (`tasks`).
"""
