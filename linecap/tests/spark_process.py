"""The same aggregation as linecap's summary, in Spark (local[2], loopback only, UI off).

usage: spark_process.py OUT CHECKPOINT_DIR RESULT_JSON

Batch: read OUT/{flows,hosts,dns} (partitioned date=/hour=) and total them.
Streaming: a file source per table, trigger(availableNow=True), a checkpoint
under CHECKPOINT_DIR; each micro-batch's totals are appended to
CHECKPOINT_DIR/TABLE.totals.jsonl, so a second run after new partitions adds
only the new rows. Both totals are written to RESULT_JSON.
"""
import json
import os
import sys

from pyspark.sql import SparkSession, functions as F

out, ckpt, result = sys.argv[1], sys.argv[2], sys.argv[3]
spark = (
    SparkSession.builder.master("local[2]")
    .appName("linecap-process-check")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "2")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")

AGG = {
    "flows": [
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("pkts_a_to_b") + F.col("pkts_b_to_a")).alias("packets"),
        F.sum(F.col("bytes_a_to_b") + F.col("bytes_b_to_a")).alias("bytes"),
    ],
    "hosts": [
        F.count(F.lit(1)).alias("rows"),
        F.sum("pkts_out").alias("pkts_out"),
        F.sum("bytes_out").alias("bytes_out"),
        F.sum("pkts_in").alias("pkts_in"),
        F.sum("bytes_in").alias("bytes_in"),
    ],
    "dns": [F.count(F.lit(1)).alias("rows")],
}


def totals(df, table):
    row = df.agg(*AGG[table]).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


res = {"batch": {}, "stream": {}}
for table in AGG:
    path = os.path.join(out, table)
    df = spark.read.parquet(path)
    res["batch"][table] = totals(df, table)
    res["batch"][table]["partitions"] = df.select("date", "hour").distinct().count()

    sink = os.path.join(ckpt, table + ".totals.jsonl")

    def each(batch_df, batch_id, table=table, sink=sink):
        t = totals(batch_df, table)
        with open(sink, "a") as f:
            f.write(json.dumps({"batch": batch_id, **t}) + "\n")

    q = (
        spark.readStream.schema(df.schema)
        .parquet(path)
        .writeStream.foreachBatch(each)
        .option("checkpointLocation", os.path.join(ckpt, table))
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    acc = {}
    with open(sink) as f:
        for line in f:
            for k, v in json.loads(line).items():
                if k != "batch":
                    acc[k] = acc.get(k, 0) + v
    res["stream"][table] = acc

spark.stop()
with open(result, "w") as f:
    json.dump(res, f)
