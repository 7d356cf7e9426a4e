"""Fetch Beam's portable Spark and Flink job servers from Maven Central and write launcher jars for them.

Usage: ``python runners/fetch.py [--out runners/build]`` (``make runners``; ``.ci/run`` calls it too).

Writes, under ``--out``:

- ``spark.classpath`` / ``flink.classpath``: the job server's classpath, one path per line;
- ``beam-spark-job-server.jar`` / ``beam-flink-job-server.jar``: a jar holding only a manifest (``Main-Class`` and a
  ``Class-Path`` of ``file:`` URLs into ``~/.m2`` and pyspark's ``jars/``), so ``java -jar`` starts the job server,
  and Beam's ``--spark_job_server_jar`` / ``--flink_job_server_jar`` options accept it as they accept the shaded
  jar that the registry does not serve. See runners/pom.xml for the versions and why.

Needs ``mvn`` and Java 17 on PATH; jars are cached in ``~/.m2`` (a second run is offline). Exit 2 with a message
when Maven or pyspark is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN_CLASS = {
    "spark": "org.apache.beam.runners.spark.SparkJobServerDriver",
    "flink": "org.apache.beam.runners.flink.FlinkJobServerDriver",
}


def spark_home() -> Path:
    """The Spark that the pinned pyspark wheel ships (its ``jars/`` and ``bin/spark-class``)."""
    spec = importlib.util.find_spec("pyspark")  # located, not imported: the JVM side needs no py4j
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyspark is not installed")
    return Path(spec.submodule_search_locations[0]).resolve()


def maven_classpath(profile: str, out: Path) -> list[str]:
    """Resolve the profile's dependencies with Maven; return the jar paths in Maven's order."""
    target = out / f"{profile}.maven-classpath"
    cmd = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(HERE / "pom.xml"), f"-P{profile}",
           "dependency:build-classpath", f"-Dmdep.outputFile={target}"]
    subprocess.run(cmd, check=True)
    return [p for p in target.read_text().strip().split(":") if p]


# What Spark's own launcher opens on Java 17 (org.apache.spark.launcher.JavaModuleOptions): the job server is the
# Spark driver, and without these SparkContext fails ("cannot access class sun.nio.ch.DirectBuffer").
ADD_OPENS = ("java.base/java.lang java.base/java.lang.invoke java.base/java.lang.reflect java.base/java.io "
             "java.base/java.net java.base/java.nio java.base/java.util java.base/java.util.concurrent "
             "java.base/java.util.concurrent.atomic java.base/jdk.internal.ref java.base/sun.nio.ch "
             "java.base/sun.nio.cs java.base/sun.security.action java.base/sun.util.calendar")


def manifest(main_class: str, classpath: list[str]) -> bytes:
    """A MANIFEST.MF with lines wrapped at 72 bytes as the jar specification requires."""
    urls = " ".join(Path(p).resolve().as_uri() for p in classpath)
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}", f"Add-Opens: {ADD_OPENS}", f"Class-Path: {urls}"]
    out = []
    for line in lines:
        raw = line.encode("utf-8")
        out.append(raw[:72])
        for i in range(72, len(raw), 71):
            out.append(b" " + raw[i:i + 71])
    return b"\r\n".join(out) + b"\r\n\r\n"


def write_launcher(path: Path, main_class: str, classpath: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest(main_class, classpath))
    tmp.replace(path)


def fetch(runner: str, out: Path) -> Path:
    """Resolve one runner's classpath and write its launcher jar; return the jar's path."""
    classpath = maven_classpath(runner, out)
    if runner == "spark":
        # Spark itself (provided scope in Beam's pom) is the one the pyspark wheel ships and runs as the cluster.
        classpath += sorted(str(p) for p in (spark_home() / "jars").glob("*.jar"))
    (out / f"{runner}.classpath").write_text("\n".join(classpath) + "\n")
    jar = out / f"beam-{runner}-job-server.jar"
    write_launcher(jar, MAIN_CLASS[runner], classpath)
    return jar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "build", help="folder for classpaths and launcher jars")
    parser.add_argument("--runner", choices=sorted(MAIN_CLASS), action="append",
                        help="runner to fetch (repeatable; default: both)")
    args = parser.parse_args(argv)
    if shutil.which("mvn") is None or shutil.which("java") is None:
        print("runners/fetch.py: needs Maven (mvn) and Java 17 on PATH", file=sys.stderr)
        return 2
    runners = args.runner or sorted(MAIN_CLASS)
    if "spark" in runners:
        try:
            spark_home()
        except ImportError:
            print("runners/fetch.py: pyspark is not installed (pip install -e '.[runners]')", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for runner in runners:
        print(fetch(runner, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
