from s3archive.cli.main import main

main()
