"""Protocol-faithful local stand-ins for every external service, served on 127.0.0.1
(`server.serve`), started together for a latency profile (`profiles`). They import the shared
contracts at most, and no product package imports them."""
