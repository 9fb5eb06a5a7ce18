"""`iaas`: the command-line client, which talks to the API over HTTP only."""
