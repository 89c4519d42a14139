from envoi.cli import main

main()
