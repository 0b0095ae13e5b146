#!/usr/bin/python3
"""An independent client of `jitctl gcp serve` (docs/gcp.md, "How agents use
it"): Debian's python3-google-auth finds the metadata server through
GCE_METADATA_IP / GCE_METADATA_ROOT as it would on a VM (Application
Default Credentials), reads the project and the service account, refreshes
its token there, and calls a Google API with it.

Usage: gcp_metadata_client.py URL [URL...]   (GETs each URL, authorised)
Prints: "project P", "account EMAIL", "scopes S,...", "token-seconds N",
then "status CODE" per URL. Exit 1 when the library finds no credentials.
"""
import datetime
import sys

import google.auth
import google.auth.transport.requests


def main():
    credentials, project = google.auth.default()
    session = google.auth.transport.requests.AuthorizedSession(credentials)
    statuses = [session.get(url).status_code for url in sys.argv[1:]]
    print("project", project)
    print("account", credentials.service_account_email)
    print("scopes", ",".join(credentials.scopes or []))
    left = credentials.expiry - datetime.datetime.utcnow()
    print("token-seconds", int(left.total_seconds()))
    for status in statuses:
        print("status", status)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except google.auth.exceptions.DefaultCredentialsError as e:
        print("no credentials:", e)
        sys.exit(1)
