from sentiment_rnn.cli import main

main()
