from glance.cli import main

main()
