using System.Runtime.Versioning;

// The agent runs on Unix only (sockets, signals); its console summary is tested here too.
[assembly: UnsupportedOSPlatform("windows")]
