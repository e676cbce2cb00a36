using System.Globalization;

namespace TelemetryAgent.Export.Serverless;

/// <summary>
/// The serverless platform a process runs on, from the variables each platform documents for its functions' environment,
/// as the OpenTelemetry semantic conventions name them (<c>faas.*</c>, <c>cloud.*</c>): AWS Lambda, Google Cloud Run
/// (services and jobs), Cloud Run functions (and Cloud Functions' first generation), Azure Functions, and Knative. What
/// needs a metadata server (a Cloud Run instance's id and region) is not known here; <c>OTEL_RESOURCE_ATTRIBUTES</c> can
/// add it, and wins over what is derived.
/// </summary>
public static class ServerlessResource
{
    private const long BytesPerMebibyte = 1024 * 1024;

    public static IReadOnlyList<KeyValuePair<string, object>> Attributes(IReadOnlyDictionary<string, string> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var attributes = new List<KeyValuePair<string, object>>(8);
        string? Get(string name) => environment.TryGetValue(name, out var value) && value.Length > 0 ? value : null;
        void Add(string key, object? value)
        {
            if (value is not null) attributes.Add(new(key, value));
        }

        if (Get("AWS_LAMBDA_FUNCTION_NAME") is { } lambdaName)
        {
            Add("cloud.provider", "aws");
            Add("cloud.platform", "aws_lambda");
            Add("cloud.region", Get("AWS_REGION"));
            Add("faas.name", lambdaName);
            Add("faas.version", Get("AWS_LAMBDA_FUNCTION_VERSION"));
            Add("faas.instance", Get("AWS_LAMBDA_LOG_STREAM_NAME"));
            Add("faas.max_memory", Mebibytes(Get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")));
        }
        else if (Get("FUNCTIONS_WORKER_RUNTIME") is not null && Get("WEBSITE_SITE_NAME") is { } siteName)
        {
            Add("cloud.provider", "azure");
            Add("cloud.platform", "azure_functions");
            Add("cloud.region", Get("REGION_NAME"));
            Add("faas.name", siteName);
            Add("faas.version", Get("FUNCTIONS_EXTENSION_VERSION"));
            Add("faas.instance", Get("WEBSITE_INSTANCE_ID"));
            Add("faas.max_memory", Mebibytes(Get("WEBSITE_MEMORY_LIMIT_MB")));
        }
        else if (Get("K_SERVICE") is { } service)
        {
            // Cloud Run implements Knative's contract (the same K_* variables); Knative runs on Kubernetes, which sets
            // KUBERNETES_SERVICE_HOST in every container, and Cloud Run does not.
            if (Get("KUBERNETES_SERVICE_HOST") is null)
            {
                Add("cloud.provider", "gcp");
                Add("cloud.platform", Get("FUNCTION_TARGET") is not null ? "gcp_cloud_functions" : "gcp_cloud_run");
            }
            Add("faas.name", service);
            Add("faas.version", Get("K_REVISION"));
        }
        else if (Get("CLOUD_RUN_JOB") is { } job)
        {
            Add("cloud.provider", "gcp");
            Add("cloud.platform", "gcp_cloud_run");
            Add("faas.name", job);
        }
        else if (Get("FUNCTION_NAME") is { } functionName && Get("FUNCTION_REGION") is { } functionRegion)
        {
            // Cloud Functions' first generation (its older runtimes).
            Add("cloud.provider", "gcp");
            Add("cloud.platform", "gcp_cloud_functions");
            Add("cloud.region", functionRegion);
            Add("faas.name", functionName);
            Add("faas.version", Get("X_GOOGLE_FUNCTION_VERSION"));
            Add("faas.max_memory", Mebibytes(Get("FUNCTION_MEMORY_MB")));
        }
        return attributes;
    }

    private static object? Mebibytes(string? text)
        => long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var mebibytes) && mebibytes > 0 && mebibytes < long.MaxValue / BytesPerMebibyte
            ? mebibytes * BytesPerMebibyte
            : null;
}
