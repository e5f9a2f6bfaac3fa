"""Scale-out on a Dask cluster: the store exported as partitioned Parquet, click training with
``lightgbm.dask`` and batch scoring spread over the workers. DuckDB on one machine stays the default."""

from engine.scale.export import EXPORTED_TABLES, export_store, parquet_connection
from engine.scale.scoring import predict_on_cluster
from engine.scale.train import train_click_dask

__all__ = ["EXPORTED_TABLES", "export_store", "parquet_connection", "predict_on_cluster", "train_click_dask"]
