from imagesync.cli import main

main()
