"""What a request leaves behind, and what proves it: signed receipts, the confirmations
sent when it is finished (webhook, e-mail), what minimising it keeps, and the stores'
own retention rules."""
