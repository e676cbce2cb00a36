using TelemetryAgent.Export.Serverless;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export.Tests;

/// <summary>
/// Each platform's identity from the environment variables its documentation lists for a function's runtime (AWS Lambda's
/// "Defined runtime environment variables", Cloud Run's container runtime contract, Cloud Run functions' and Cloud
/// Functions' runtime variables, Azure Functions' app settings, Knative's runtime contract), mapped as the semantic
/// conventions say (faas.max_memory in bytes).
/// </summary>
public sealed class ServerlessResourceTests
{
    private static Dictionary<string, object> Detect(params (string Name, string Value)[] environment)
        => ServerlessResource.Attributes(environment.ToDictionary(entry => entry.Name, entry => entry.Value))
            .ToDictionary(attribute => attribute.Key, attribute => attribute.Value);

    [Fact]
    public void AwsLambda()
    {
        var attributes = Detect(("AWS_LAMBDA_FUNCTION_NAME", "orders"), ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2025/03/14/[$LATEST]2f399eb14537447da05ab2a2e39309de"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"), ("AWS_REGION", "eu-west-1"));
        Assert.Equal(new Dictionary<string, object>
        {
            ["cloud.provider"] = "aws", ["cloud.platform"] = "aws_lambda", ["cloud.region"] = "eu-west-1",
            ["faas.name"] = "orders", ["faas.version"] = "$LATEST",
            ["faas.instance"] = "2025/03/14/[$LATEST]2f399eb14537447da05ab2a2e39309de", ["faas.max_memory"] = 536_870_912L,
        }, attributes);
    }

    [Fact]
    public void GoogleCloudRunService()
    {
        var attributes = Detect(("PORT", "8080"), ("K_SERVICE", "hello-world"), ("K_REVISION", "hello-world.1"),
            ("K_CONFIGURATION", "hello-world"));
        Assert.Equal(new Dictionary<string, object>
        {
            ["cloud.provider"] = "gcp", ["cloud.platform"] = "gcp_cloud_run", ["faas.name"] = "hello-world", ["faas.version"] = "hello-world.1",
        }, attributes);
    }

    [Fact]
    public void GoogleCloudRunFunctions()
    {
        var attributes = Detect(("K_SERVICE", "resize"), ("K_REVISION", "resize-00003-xoz"), ("K_CONFIGURATION", "resize"),
            ("FUNCTION_TARGET", "resize_image"), ("FUNCTION_SIGNATURE_TYPE", "cloudevent"));
        Assert.Equal("gcp_cloud_functions", attributes["cloud.platform"]);
        Assert.Equal("resize", attributes["faas.name"]);
        Assert.Equal("resize-00003-xoz", attributes["faas.version"]);
    }

    [Fact]
    public void GoogleCloudFunctionsFirstGeneration()
    {
        var attributes = Detect(("FUNCTION_NAME", "thumbnails"), ("FUNCTION_REGION", "us-central1"), ("X_GOOGLE_FUNCTION_VERSION", "7"),
            ("FUNCTION_MEMORY_MB", "256"));
        Assert.Equal(new Dictionary<string, object>
        {
            ["cloud.provider"] = "gcp", ["cloud.platform"] = "gcp_cloud_functions", ["cloud.region"] = "us-central1",
            ["faas.name"] = "thumbnails", ["faas.version"] = "7", ["faas.max_memory"] = 268_435_456L,
        }, attributes);
    }

    [Fact]
    public void GoogleCloudRunJob()
    {
        var attributes = Detect(("CLOUD_RUN_JOB", "nightly-export"), ("CLOUD_RUN_EXECUTION", "nightly-export-abc"), ("CLOUD_RUN_TASK_INDEX", "0"));
        Assert.Equal("gcp_cloud_run", attributes["cloud.platform"]);
        Assert.Equal("nightly-export", attributes["faas.name"]);
    }

    [Fact]
    public void AzureFunctions()
    {
        var attributes = Detect(("FUNCTIONS_WORKER_RUNTIME", "python"), ("FUNCTIONS_EXTENSION_VERSION", "~4"),
            ("WEBSITE_SITE_NAME", "orders-app"), ("WEBSITE_INSTANCE_ID", "a1b2c3"), ("REGION_NAME", "West Europe"),
            ("WEBSITE_MEMORY_LIMIT_MB", "1536"));
        Assert.Equal(new Dictionary<string, object>
        {
            ["cloud.provider"] = "azure", ["cloud.platform"] = "azure_functions", ["cloud.region"] = "West Europe",
            ["faas.name"] = "orders-app", ["faas.version"] = "~4", ["faas.instance"] = "a1b2c3", ["faas.max_memory"] = 1_610_612_736L,
        }, attributes);
    }

    [Fact]
    public void KnativeOnKubernetesNamesNoCloud()
    {
        var attributes = Detect(("K_SERVICE", "orders"), ("K_REVISION", "orders-00002"), ("K_CONFIGURATION", "orders"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"));
        Assert.Equal(new Dictionary<string, object> { ["faas.name"] = "orders", ["faas.version"] = "orders-00002" }, attributes);
    }

    [Fact]
    public void NoPlatformNoAttributesAndABadMemorySizeIsLeftOut()
    {
        Assert.Empty(Detect(("PATH", "/usr/bin")));
        Assert.False(Detect(("AWS_LAMBDA_FUNCTION_NAME", "f"), ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots")).ContainsKey("faas.max_memory"));
    }

    [Fact]
    public void TheProcessResourceCarriesThemAndOtelResourceAttributesWin()
    {
        var identity = new ProcessIdentity(1, 0, ["app.py"], "/usr/bin/python3.12", "cpython", "3.12.1", "h", "app",
            "cloud.region=us-east-2", "1", "/", 1)
        {
            PlatformEnvironment = new Dictionary<string, string> { ["AWS_LAMBDA_FUNCTION_NAME"] = "orders", ["AWS_REGION"] = "eu-west-1" },
        };
        var attributes = ProcessResource.Attributes(identity).ToDictionary(a => a.Key, a => a.Value);
        Assert.Equal("orders", attributes["faas.name"]);
        Assert.Equal("aws_lambda", attributes["cloud.platform"]);
        Assert.Equal("us-east-2", attributes["cloud.region"]);
    }
}
