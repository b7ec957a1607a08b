from malmoi.cli import main

main()
