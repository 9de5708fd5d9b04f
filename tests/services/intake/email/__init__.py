"""E-mail intake: parser, corpus, test world, IMAP harness."""
