from voicegw.cli import main

main()
