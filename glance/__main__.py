from glance.cli import main

if __name__ == "__main__":  # not when a spawned child (a download) imports it
    main()
