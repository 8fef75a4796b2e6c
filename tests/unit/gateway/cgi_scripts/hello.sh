#!/bin/sh
# A non-Python CGI script: run directly, by its shebang.
printf 'Content-Type: text/plain\n\nhello from %s\n' "$REQUEST_METHOD"
