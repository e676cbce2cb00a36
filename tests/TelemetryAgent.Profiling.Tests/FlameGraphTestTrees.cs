using System.Reflection;
using System.Runtime.CompilerServices;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Call trees for the flame graph tests, shaped like the agent's merged tree: root -> process ->
/// thread -> frames, with process and thread totals left at 0 as the aggregation may leave them.</summary>
internal static class FlameGraphTestTrees
{
    public static FunctionInfo Function(string qualifiedName, string fileName, int line, string? displayFile = null,
        string? module = null, uint kindFlags = 0)
        => new(qualifiedName, fileName, displayFile ?? Path.GetFileName(fileName), line,
            module ?? Path.GetFileNameWithoutExtension(fileName), kindFlags);

    /// <summary>Sets a node's counters, which only the aggregation may set in production code.</summary>
    public static CallNode With(this CallNode node, long calls = 0, long resumes = 0, long selfNs = 0, long totalNs = 0)
    {
        Set(node, nameof(CallNode.Calls), calls);
        Set(node, nameof(CallNode.Resumes), resumes);
        Set(node, nameof(CallNode.SelfNs), selfNs);
        Set(node, nameof(CallNode.TotalNs), totalNs);
        return node;
    }

    private static void Set(CallNode node, string property, long value)
        => typeof(CallNode).GetProperty(property, BindingFlags.Public | BindingFlags.Instance)!.SetValue(node, value);

    /// <summary>Sets TotalNs of every function frame to self + children, as the aggregation does; group nodes
    /// (no function) keep TotalNs 0.</summary>
    public static void FillTotals(CallNode root)
    {
        var order = new List<CallNode>();
        var pending = new Stack<CallNode>();
        pending.Push(root);
        while (pending.TryPop(out var node))
        {
            order.Add(node);
            foreach (var child in node.Children) pending.Push(child);
        }
        for (var i = order.Count - 1; i >= 0; i--)
        {
            var node = order[i];
            if (node.Function is null) continue;
            node.With(node.Calls, node.Resumes, node.SelfNs, node.SelfNs + node.Children.Sum(c => c.TotalNs));
        }
    }

    private static readonly FunctionInfo Main = Function("main", "/srv/app/app.py", 10, "app.py", "__main__");
    private static readonly FunctionInfo Handle = Function("Handler.handle", "/srv/app/web/handlers.py", 42, "web/handlers.py", "web.handlers");
    private static readonly FunctionInfo Render = Function("render_page", "/srv/app/web/templates.py", 7, "web/templates.py", "web.templates");
    private static readonly FunctionInfo Fib = Function("fib", "/srv/app/mathutil.py", 3, "mathutil.py", "mathutil");
    private static readonly FunctionInfo Rows = Function("fetch_rows", "/srv/app/db.py", 21, "db.py", "db", kindFlags: 1);
    private static readonly FunctionInfo Execute = Function("Session.execute", "/srv/venv/lib/python3.12/site-packages/sqlalchemy/orm/session.py", 2229, "sqlalchemy/orm/session.py", "sqlalchemy.orm.session");
    private static readonly FunctionInfo Dumps = Function("dumps", "/usr/lib/python3.12/json/__init__.py", 183, "json/__init__.py", "json");
    private static readonly FunctionInfo Encode = Function("JSONEncoder.encode", "/usr/lib/python3.12/json/encoder.py", 183, "json/encoder.py", "json.encoder");
    private static readonly FunctionInfo Import = Function("_find_and_load", "<frozen importlib._bootstrap>", 1349, module: "importlib._bootstrap");
    private static readonly FunctionInfo Worker = Function("Thread.run", "/usr/lib/python3.12/threading.py", 990, "threading.py", "threading");
    private static readonly FunctionInfo Poll = Function("poll_queue", "/srv/app/worker.py", 12, "worker.py", "worker");

    /// <summary>A small profile with every kind of frame: user code, a third-party package, the standard
    /// library, a frozen module, recursion and a generator, over two processes and three threads.</summary>
    public static CallNode Small()
    {
        var root = CallNode.CreateRoot("all");
        var web = root.GetOrAddGroup("webapp (pid 4242)");
        var mainThread = web.GetOrAddGroup("thread MainThread");

        var main = mainThread.GetOrAddChild(Main).With(calls: 1, selfNs: 1_200_000);
        main.GetOrAddChild(Import).With(calls: 14, selfNs: 9_000_000);
        var handle = main.GetOrAddChild(Handle).With(calls: 120, selfNs: 15_000_000);
        var render = handle.GetOrAddChild(Render).With(calls: 120, selfNs: 40_000_000);
        var dumps = render.GetOrAddChild(Dumps).With(calls: 120, selfNs: 3_000_000);
        dumps.GetOrAddChild(Encode).With(calls: 120, selfNs: 22_000_000);
        var rows = handle.GetOrAddChild(Rows).With(calls: 120, resumes: 2_400, selfNs: 6_000_000);
        rows.GetOrAddChild(Execute).With(calls: 120, selfNs: 180_000_000);
        var fib = main.GetOrAddChild(Fib).With(calls: 1, selfNs: 2_000_000);
        for (var level = 0; level < 6; level++) fib = fib.GetOrAddChild(Fib).With(calls: 2L << level, selfNs: 4_000_000L >> level);

        var worker = web.GetOrAddGroup("thread worker-1").GetOrAddChild(Worker).With(calls: 1, selfNs: 500_000);
        worker.GetOrAddChild(Poll).With(calls: 300, selfNs: 70_000_000).GetOrAddChild(Execute).With(calls: 300, selfNs: 95_000_000);

        var batch = root.GetOrAddGroup("batch-job (pid 4250)").GetOrAddGroup("thread MainThread");
        batch.GetOrAddChild(Main).With(calls: 1, selfNs: 800_000).GetOrAddChild(Dumps).With(calls: 5_000, selfNs: 31_000_000)
            .GetOrAddChild(Encode).With(calls: 5_000, selfNs: 88_000_000);

        FillTotals(root);
        return root;
    }

    /// <summary>A wide and deep random profile (seeded, so identical on every run) of about
    /// <paramref name="nodeCount"/> nodes, to check that the page stays fast.</summary>
    public static CallNode Large(int nodeCount, int seed = 7)
    {
        var random = new Random(seed);
        var functions = new FunctionInfo[600];
        for (var i = 0; i < functions.Length; i++)
        {
            functions[i] = (i % 5) switch
            {
                0 => Function($"stdlib_{i}", $"/usr/lib/python3.12/pkg{i % 17}/mod{i}.py", 10 + i, $"pkg{i % 17}/mod{i}.py"),
                1 => Function($"Lib{i}.call", $"/srv/venv/lib/python3.12/site-packages/lib{i % 11}/m{i}.py", 100 + i, $"lib{i % 11}/m{i}.py"),
                2 when i % 3 == 0 => Function($"_bootstrap_{i}", "<frozen importlib._bootstrap>", i),
                _ => Function($"service.component_{i % 40}.operation_{i}", $"/srv/app/service/component_{i % 40}.py", 5 + i, $"service/component_{i % 40}.py"),
            };
        }

        var root = CallNode.CreateRoot("all");
        var threads = new List<CallNode>();
        for (var p = 0; p < 3; p++)
        {
            var process = root.GetOrAddGroup($"service-{p} (pid {1000 + p})");
            for (var t = 0; t < 4; t++) threads.Add(process.GetOrAddGroup(t == 0 ? "thread MainThread" : $"thread worker-{t}"));
        }

        var count = 1 + 3 + threads.Count;
        var open = new List<CallNode>(threads);
        while (count < nodeCount)
        {
            // Prefer recent nodes so that stacks get deep, with some fan-out everywhere.
            var parentIndex = open.Count - 1 - (int)Math.Min(open.Count - 1, Math.Floor(Math.Pow(random.NextDouble(), 3) * open.Count));
            var parent = open[parentIndex];
            var before = parent.Children.Count;
            var child = parent.GetOrAddChild(functions[random.Next(functions.Length)]);
            if (parent.Children.Count == before) continue;
            child.With(calls: 1 + random.Next(1, 2_000), selfNs: (long)(Math.Pow(random.NextDouble(), 4) * 50_000_000));
            open.Add(child);
            count++;
        }

        FillTotals(root);
        return root;
    }

    /// <summary>The repository root, found from this source file's location.</summary>
    public static string RepositoryRoot([CallerFilePath] string sourceFile = "")
    {
        var directory = new DirectoryInfo(Path.GetDirectoryName(sourceFile)!);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "TelemetryAgent.sln"))) directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("TelemetryAgent.sln not found above " + sourceFile);
    }
}
