"""Drives Microsoft's Deployment Environments SDK (azure-developer-devcenter) through an
azgate route, for tests/sdk_devcenter.rs.

The client is given a placeholder credential, as a tool behind azgate would be: azgate
injects the real token. The script creates an environment and waits for the long-running
operation, then lists every environment of the project (all pages). It prints one JSON
object on stdout: what the SDK returned and every URL it requested, with the Authorization
it sent. It exits 1 (with the error in the JSON) when the SDK raises.
"""

import argparse
import json
import sys

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.developer.devcenter import DevCenterClient

PLACEHOLDER = "placeholder-not-a-token"


class PlaceholderCredential:
    """A TokenCredential whose token means nothing: azgate replaces it."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken(PLACEHOLDER, 4102444800)  # 2100-01-01


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="https://localhost:PORT/dc")
    parser.add_argument("--ca", required=True, help="the PEM of the CA of azgate's certificate")
    parser.add_argument("--project", required=True)
    parser.add_argument("--environment", required=True)
    args = parser.parse_args()

    requested = []

    def record(request):
        http = request.http_request
        authorization = http.headers.get("Authorization")
        requested.append({"method": http.method, "url": http.url, "authorization": authorization})

    client = DevCenterClient(
        endpoint=args.endpoint,
        credential=PlaceholderCredential(),
        api_version="2024-02-01",
        connection_verify=args.ca,
        raw_request_hook=record,
        # No waits against the loopback mock: one try per request (a failure shows at
        # once) and the operation's status polled back to back.
        retry_total=0,
        polling_interval=0,
    )
    out = {"requested": requested}
    try:
        poller = client.begin_create_or_update_environment(
            args.project,
            "me",
            args.environment,
            {
                "environmentType": "Dev",
                "catalogName": "main",
                "environmentDefinitionName": "webapp",
                "parameters": {"size": "small"},
            },
        )
        created = poller.result(timeout=30)
        out["created"] = {"status": poller.status(), "environment": created.as_dict()}
        listed = list(client.list_all_environments(args.project))
        out["listed"] = [environment.as_dict() for environment in listed]
    except (HttpResponseError, ServiceRequestError) as error:
        response = getattr(error, "response", None)
        out["error"] = {
            "type": type(error).__name__,
            "message": str(error).splitlines()[0] if str(error) else "",
            "status": getattr(error, "status_code", None),
            "url": response.request.url if response is not None else None,
            "error_code": response.headers.get("x-ms-error-code") if response is not None else None,
        }
        print(json.dumps(out))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
