"""A Lambda runtime interface client for the tests, doing what AWS's (awslambdaric) does with the Runtime API
(2018-06-01) at AWS_LAMBDA_RUNTIME_API: import the handler that _HANDLER names from LAMBDA_TASK_ROOT, then for
each event from /invocation/next call it with the event and a context, and post its result or its error."""

import http.client
import importlib
import json
import os
import sys
import time

API = "/2018-06-01/runtime"


class LambdaContext:
    def __init__(self, request_id, deadline_ms, function_arn):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def main():
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    connection = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
    while True:
        connection.request("GET", API + "/invocation/next")
        response = connection.getresponse()
        event = json.loads(response.read())
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        context = LambdaContext(request_id, int(response.getheader("Lambda-Runtime-Deadline-Ms")),
                                response.getheader("Lambda-Runtime-Invoked-Function-Arn"))
        try:
            path, body, headers = "/response", json.dumps(handler(event, context)), {}
        except Exception as error:
            path, headers = "/error", {"Lambda-Runtime-Function-Error-Type": "Unhandled"}
            body = json.dumps({"errorMessage": str(error), "errorType": type(error).__name__})
        connection.request("POST", API + "/invocation/" + request_id + path, body, headers)
        connection.getresponse().read()


if __name__ == "__main__":
    main()
