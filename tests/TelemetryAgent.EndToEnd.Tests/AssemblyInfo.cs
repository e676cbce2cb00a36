using System.Runtime.Versioning;

// The agent runs on Unix only (sockets, signals); so do its end-to-end tests.
[assembly: UnsupportedOSPlatform("windows")]
// Each test class starts real processes; two at once is what a 2-core CI machine carries well.
[assembly: CollectionBehavior(MaxParallelThreads = 2)]
