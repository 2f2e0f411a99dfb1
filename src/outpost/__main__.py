from outpost.cli.main import main

main()
