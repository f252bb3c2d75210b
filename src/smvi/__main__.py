from smvi.cli import main

main(prog_name="smvi")
