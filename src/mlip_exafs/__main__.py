from mlip_exafs.cli import main

main()
