"""The pure core of image sync: what a product's new image list means against what it
has (the planner), file names, and the error and warning codes. No I/O, no database:
everything here is a function of its arguments, and property-tested as such."""
