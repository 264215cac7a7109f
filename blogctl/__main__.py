from blogctl.cli import main

main()
