"""Qdrant as the vector engine for galleries that outgrow one process: UNIFY (dense latent, sparse lexicon,
exact 1:1 fusion) and T-MASS (mean-frame candidates, exact rescoring of the candidates' own frames).

The classes here have the interface of the in-memory indexes of `video_text_retrieval.index`:
``add(ids, vectors, payload=None)``, ``search(queries, k, filter=None) -> (ids, scores)``, ``delete(ids)``,
``len()``; persistence is the engine's own (a server, or a folder reopened with the same ``path``).

Engines (``engine=``), chosen by where the data lives (the default is ``"auto"``):

* ``url="http://host:6333"`` (or ``client=QdrantClient(...)``): a Qdrant server or cluster through
  ``qdrant-client``; the way to scale out (``docker run -p 6333:6333 qdrant/qdrant``).
* ``path="folder"``: embedded. With ``qdrant-edge-py`` installed (``"edge"``), Qdrant's own Rust engine runs
  in this process; this is the default for ``path=`` because it is the fast one (see
  ``benchmarks/RESULTS_galleries.md``). Without it, ``qdrant-client``'s local mode (``"local"``).
* ``location=":memory:"`` (the default when nothing is given): ``qdrant-client``'s local mode in memory.
  Local mode is a pure-Python re-implementation meant for tests: exact, but orders of magnitude slower.

Ids: Qdrant point ids are unsigned ints or UUIDs. Non-negative int ids are used as they are; str ids are
mapped to a UUID (``uuid5`` of the id, so the mapping needs no table); the original id is stored in the
payload field ``ID_FIELD`` and returned by ``search``. Payload filters: a dict ``{"field": value}`` (equality)
or ``{"field": [v1, v2]}`` (any of), all conditions joined by AND, or a native ``Filter`` of the engine in use.

UNIFY fusion (Liu et al., LREC-COLING 2024: latent cosine + lexicon cosine, 1:1) is computed exactly, never
with the engine's RRF or weighted rankers (which are another score): two prefetches take the latent top-``depth``
and the lexicon top-``depth``; two enclosing prefetches rescore their union, one with the latent query and one
with the lexicon query (every union member then has both exact scores; a document sharing no word with the query
has lexicon score 0, the formula's default); a formula sums them with the fusion weights. The same threshold
bound as ``FusedIndex`` (latent and lexicon tails of the two lists) proves, per query, that the top-``k`` is exact;
``search`` deepens the lists of unproven queries up to ``max_depth`` and reports what was proven.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .index import NORM_EPS, SparseLexiconIndex, _IdStore, _to_dense_numpy, threshold_bound

__all__ = ["ID_FIELD", "QdrantDenseIndex", "QdrantFusedIndex", "QdrantSparseIndex", "QdrantTMassIndex", "edge_available"]

ID_FIELD = "video_id"
ID_KIND_FIELD = "video_id_kind"
UUID_NAMESPACE = uuid.UUID("6f1d3c36-4b1e-5d7a-9a43-0c1b7a5e2f10")
LATENT, LEXICON, TMASS_MEAN, TMASS_FRAMES = "latent", "lexicon", "tmass_mean", "tmass_frames"
UPSERT_BATCH = 512


def edge_available() -> bool:
    try:
        import qdrant_edge  # noqa: F401
    except ImportError:
        return False
    return True


def point_id(value: int | str):
    """The Qdrant point id of a user id: the int itself (>= 0), or a UUID derived from the string."""
    if isinstance(value, str):
        return str(uuid.uuid5(UUID_NAMESPACE, value))
    if value < 0:
        raise ValueError(f"`ids`: Qdrant point ids must be >= 0 or strings, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------------
# Engine-neutral request description, translated by each engine
# ---------------------------------------------------------------------------------------------------


@dataclass
class Nearest:
    using: str
    vector: Any  # list[float] | (indices, values)


@dataclass
class WeightedSum:
    """Sum of `weights[i] * $score[i]` over the request's prefetches (missing score: 0)."""

    weights: tuple[float, ...]


@dataclass
class Request:
    limit: int
    query: Nearest | WeightedSum
    prefetch: list["Request"] = field(default_factory=list)
    exact: bool = True
    with_payload: bool = False
    hnsw_ef: int | None = None  # HNSW beam width of an approximate search (None: the engine's default)


class _ClientEngine:
    """`qdrant-client`: a server (`url`), a client given by the caller, or local mode (`path` / `:memory:`)."""

    name = "client"

    def __init__(self, client, collection: str) -> None:
        from qdrant_client import models

        self.client, self.collection, self.models = client, collection, models

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def create(self, dense: dict[str, int], sparse: Sequence[str], multi: dict[str, int], payload_fields: dict[str, str],
               hnsw: bool = True):
        m = self.models
        graph = None if hnsw else m.HnswConfigDiff(m=0)  # m = 0: no graph, every dense search is an exact scan
        vectors = {name: m.VectorParams(size=size, distance=m.Distance.DOT, hnsw_config=graph) for name, size in dense.items()}
        for name, size in multi.items():  # stored for rescoring, never indexed (m = 0: no HNSW graph)
            vectors[name] = m.VectorParams(
                size=size, distance=m.Distance.DOT, hnsw_config=m.HnswConfigDiff(m=0),
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                datatype=m.Datatype.FLOAT16,
            )
        self.client.create_collection(
            self.collection, vectors_config=vectors, sparse_vectors_config={name: m.SparseVectorParams() for name in sparse}
        )
        for name, schema in payload_fields.items():
            self.client.create_payload_index(self.collection, name, m.PayloadSchemaType(schema))

    def vector_sizes(self) -> dict[str, int]:
        info = self.client.get_collection(self.collection)
        vectors = info.config.params.vectors or {}
        sizes = {name: params.size for name, params in vectors.items()}
        sizes.update({name: 0 for name in (info.config.params.sparse_vectors or {})})
        return sizes

    def upsert(self, points: list[tuple]) -> None:
        m = self.models
        structs = [
            m.PointStruct(id=pid, vector={name: self._vector(value) for name, value in vectors.items()}, payload=payload)
            for pid, vectors, payload in points
        ]
        self.client.upsert(self.collection, structs, wait=True)

    def _vector(self, value):
        if isinstance(value, tuple):
            return self.models.SparseVector(indices=value[0], values=value[1])
        return value

    def delete(self, point_ids: list) -> None:
        self.client.delete(self.collection, points_selector=self.models.PointIdsList(points=point_ids), wait=True)

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def filter(self, spec):
        return _dict_filter(spec, self.models.Filter, self.models.FieldCondition,
                            lambda v: self.models.MatchValue(value=v), lambda vs: self.models.MatchAny(any=vs))

    def _query(self, request: Request):
        m = self.models
        if isinstance(request.query, Nearest):
            return self._vector(request.query.vector), request.query.using
        terms = [m.MultExpression(mult=[weight, f"$score[{i}]"]) for i, weight in enumerate(request.query.weights)]
        defaults = {f"$score[{i}]": 0.0 for i in range(len(request.query.weights))}
        return m.FormulaQuery(formula=m.SumExpression(sum=terms), defaults=defaults), None

    def _prefetch(self, request: Request, native_filter):
        query, using = self._query(request)
        return self.models.Prefetch(
            query=query, using=using, limit=request.limit, filter=native_filter,
            prefetch=[self._prefetch(inner, native_filter) for inner in request.prefetch] or None,
            params=self.models.SearchParams(exact=request.exact, hnsw_ef=request.hnsw_ef),
        )

    def query_batch(self, requests: list[Request], native_filter) -> list[list[tuple]]:
        m = self.models
        batch = []
        for request in requests:
            query, using = self._query(request)
            batch.append(m.QueryRequest(
                query=query, using=using, limit=request.limit, filter=native_filter, with_payload=request.with_payload,
                prefetch=[self._prefetch(inner, native_filter) for inner in request.prefetch] or None,
                params=m.SearchParams(exact=request.exact, hnsw_ef=request.hnsw_ef),
            ))
        responses = self.client.query_batch_points(self.collection, batch)
        return [[(point.id, point.score, point.payload) for point in response.points] for response in responses]

    def retrieve(self, point_ids: list, vectors: list[str]) -> dict:
        records = self.client.retrieve(self.collection, point_ids, with_payload=False, with_vectors=vectors)
        return {_normalise_id(record.id): record.vector for record in records}

    def close(self) -> None:
        self.client.close()


class _EdgeEngine:
    """`qdrant-edge-py`: Qdrant's engine embedded in this process, one shard in a folder."""

    name = "edge"

    def __init__(self, path: Path) -> None:
        import qdrant_edge

        self.qe, self.path, self.shard = qdrant_edge, Path(path), None
        if self.path.is_dir() and any(self.path.iterdir()):
            try:
                self.shard = qdrant_edge.EdgeShard.load(str(self.path))
            except Exception as error:  # noqa: BLE001 - report which folder could not be opened
                raise ValueError(f"{self.path}: cannot open as a Qdrant edge shard ({error})") from None

    def exists(self) -> bool:
        return self.shard is not None

    def create(self, dense: dict[str, int], sparse: Sequence[str], multi: dict[str, int], payload_fields: dict[str, str],
               hnsw: bool = True):
        qe = self.qe
        graph = None if hnsw else qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000)
        vectors = {name: qe.EdgeVectorParams(size=size, distance=qe.Distance.Dot, hnsw_config=graph) for name, size in dense.items()}
        for name, size in multi.items():
            vectors[name] = qe.EdgeVectorParams(
                size=size, distance=qe.Distance.Dot, hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
                multivector_config=qe.MultiVectorConfig(comparator=qe.MultiVectorComparator.MaxSim),
                datatype=qe.VectorStorageDatatype.Float16,
            )
        config = qe.EdgeConfig(vectors=vectors, sparse_vectors={name: qe.EdgeSparseVectorParams() for name in sparse})
        self.shard = qe.EdgeShard.create(str(self.path), config)
        for name, schema in payload_fields.items():
            self.shard.update(qe.UpdateOperation.create_field_index(name, getattr(qe.PayloadSchemaType, schema.capitalize())))

    def vector_sizes(self) -> dict[str, int]:
        return {}

    def upsert(self, points: list[tuple]) -> None:
        qe = self.qe
        native = [
            qe.Point(id=pid, vector={name: self._vector(value) for name, value in vectors.items()}, payload=payload)
            for pid, vectors, payload in points
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(native))

    def _vector(self, value):
        if isinstance(value, tuple):
            return self.qe.SparseVector(indices=value[0], values=value[1])
        return value

    def delete(self, point_ids: list) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points(point_ids))

    def count(self) -> int:
        return int(self.shard.count(self.qe.CountRequest(exact=True)))

    def filter(self, spec):
        qe = self.qe
        return _dict_filter(spec, qe.Filter, qe.FieldCondition, lambda v: qe.MatchValue(v), lambda vs: qe.MatchAny(vs))

    def _query(self, request: Request):
        qe = self.qe
        if isinstance(request.query, Nearest):
            return qe.Query.Nearest(self._vector(request.query.vector), using=request.query.using)
        terms = [
            qe.Expression.Mult([qe.Expression.Constant(weight), qe.Expression.Variable(f"$score[{i}]")])
            for i, weight in enumerate(request.query.weights)
        ]
        defaults = {f"$score[{i}]": 0.0 for i in range(len(request.query.weights))}
        return qe.Formula(formula=qe.Expression.Sum(terms), defaults=defaults)

    def _prefetch(self, request: Request, native_filter):
        return self.qe.Prefetch(
            limit=request.limit, query=self._query(request), filter=native_filter,
            prefetches=[self._prefetch(inner, native_filter) for inner in request.prefetch] or None,
            params=self.qe.SearchParams(exact=request.exact, hnsw_ef=request.hnsw_ef),
        )

    def query_batch(self, requests: list[Request], native_filter) -> list[list[tuple]]:
        qe = self.qe
        batch = [
            qe.QueryRequest(
                limit=request.limit, query=self._query(request), filter=native_filter,
                with_payload=request.with_payload,
                prefetches=[self._prefetch(inner, native_filter) for inner in request.prefetch] or None,
                params=qe.SearchParams(exact=request.exact, hnsw_ef=request.hnsw_ef),
            )
            for request in requests
        ]
        responses = self.shard.query_batch(qe.QueryBatchRequest(batch))
        return [[(point.id, point.score, point.payload) for point in response] for response in responses]

    def retrieve(self, point_ids: list, vectors: list[str]) -> dict:
        records = self.shard.retrieve(point_ids, with_payload=False, with_vector=vectors)
        return {_normalise_id(record.id): record.vector for record in records}

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None


def _normalise_id(value):
    return str(value) if isinstance(value, uuid.UUID) else value


def _dict_filter(spec, filter_class, condition_class, match_value, match_any):
    """`{"field": value | [values]}` (AND of equalities / any-of) -> the engine's Filter; a native one passes."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return spec
    conditions = []
    for key, value in spec.items():
        if isinstance(value, (list, tuple, set)):
            conditions.append(condition_class(key=key, match=match_any(list(value))))
        else:
            conditions.append(condition_class(key=key, match=match_value(value)))
    return filter_class(must=conditions)


def _open_engine(location, path, url, client, collection, engine):
    if engine not in ("auto", "edge", "client", "local"):
        raise ValueError(f"`engine` must be 'auto', 'edge', 'client' or 'local', got {engine!r}")
    given = [name for name, value in (("location", location), ("path", path), ("url", url), ("client", client)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of `location`, `path`, `url`, `client`; got {given}")
    if client is not None:
        return _ClientEngine(client, collection)
    from_edge = path is not None and (engine == "edge" or (engine == "auto" and edge_available()))
    if engine == "edge" and path is None:
        raise ValueError("engine='edge' needs `path` (a folder for the shard)")
    if from_edge:
        if not edge_available():
            raise ImportError("engine='edge' needs `qdrant-edge-py` (pip install 'video-text-retrieval[qdrant]')")
        return _EdgeEngine(Path(path) / collection)
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise ImportError("the Qdrant indexes need `qdrant-client` (pip install 'video-text-retrieval[qdrant]')") from None
    if url is not None:
        return _ClientEngine(QdrantClient(url=url), collection)
    if path is not None:
        return _ClientEngine(QdrantClient(path=str(path)), collection)
    return _ClientEngine(QdrantClient(location=location or ":memory:"), collection)


# ---------------------------------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------------------------------


class _QdrantCollection:
    """Shared plumbing: engine, collection creation, id mapping, payloads, deletes."""

    DENSE: tuple[str, ...] = ()
    SPARSE: tuple[str, ...] = ()
    MULTI: tuple[str, ...] = ()

    def __init__(
        self, location=None, *, path=None, url=None, client=None, collection: str = "gallery", engine: str = "auto",
        payload_indexes: dict[str, str] | None = None, hnsw: bool = True,
    ) -> None:
        self.engine = _open_engine(location, path, url, client, collection, engine)
        self.collection = collection
        self.hnsw = bool(hnsw)  # build Qdrant's HNSW graph for the dense vectors (False: exact scans only, faster build)
        schemas = ("keyword", "integer", "float", "bool")
        self.payload_indexes = dict(payload_indexes or {})
        for name, schema in self.payload_indexes.items():
            if schema not in schemas:
                raise ValueError(f"`payload_indexes[{name!r}]` must be one of {schemas}, got {schema!r}")
        self._sizes: dict[str, int] | None = None
        if self.engine.exists():
            self._sizes = self.engine.vector_sizes() or None

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def __len__(self) -> int:
        return self.engine.count() if self.engine.exists() else 0

    def _ensure_collection(self, sizes: dict[str, int]) -> None:
        if not self.engine.exists():
            self.engine.create(
                {name: sizes[name] for name in self.DENSE}, self.SPARSE, {name: sizes[name] for name in self.MULTI},
                self.payload_indexes, self.hnsw,
            )
            self._sizes = dict(sizes)
        elif self._sizes:
            for name in self.DENSE + self.MULTI:
                if name in self._sizes and self._sizes[name] != sizes[name]:
                    raise ValueError(f"`vectors`: {name} has {sizes[name]} dimensions but the collection has {self._sizes[name]}")

    def _points(self, ids, vectors_by_name: dict[str, list], payload) -> list[tuple]:
        array, kind = _IdStore.as_array(ids, len(next(iter(vectors_by_name.values()))))
        values = array.tolist()
        if len(set(values)) != len(values):
            raise ValueError("duplicate ids in `ids`")
        if payload is not None and len(payload) != len(values):
            raise ValueError(f"`payload` has {len(payload)} entries but `ids` has {len(values)}")
        points = []
        for row, value in enumerate(values):
            extra = dict(payload[row]) if payload is not None else {}
            if ID_FIELD in extra:
                raise ValueError(f"`payload`: the field {ID_FIELD!r} is reserved for the original id")
            extra[ID_FIELD], extra[ID_KIND_FIELD] = value, kind
            points.append((point_id(value), {name: vectors[row] for name, vectors in vectors_by_name.items()}, extra))
        return points

    def _upsert(self, points: list[tuple]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            self.engine.upsert(points[start : start + UPSERT_BATCH])

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id (ids not in the collection are ignored by Qdrant)."""
        array, _ = _IdStore.as_array(ids, None)
        self.engine.delete([point_id(value) for value in array.tolist()])

    def close(self) -> None:
        """Flush and release the engine (an embedded shard is then reopened with the same `path`)."""
        self.engine.close()

    def _ids_of(self, results: list[list[tuple]], k: int):
        """Results `[(pid, score, payload)]` per query -> `(ids [Q, k'], scores [Q, k'])`, k' the longest row;
        shorter rows (a filter left fewer documents) are padded with id None / score -inf."""
        width = max((len(row[:k]) for row in results), default=0)
        ids = np.empty((len(results), width), dtype=object)
        scores = np.full((len(results), width), -np.inf, dtype=np.float32)
        for number, row in enumerate(results):
            for column, (_, score, payload) in enumerate(row[:k]):
                ids[number, column] = payload[ID_FIELD]
                scores[number, column] = score
        kinds = {type(value) for value in ids.flatten() if value is not None}
        if (ids != None).all() and kinds <= {int}:  # noqa: E711 - elementwise
            ids = ids.astype(np.int64)
        elif (ids != None).all() and kinds <= {str}:  # noqa: E711
            ids = ids.astype(np.str_)
        return ids, scores


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), NORM_EPS)


def _sparse_rows(matrix: sp.csr_matrix) -> list[tuple[list[int], list[float]]]:
    return [
        (matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].tolist(),
         matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]].tolist())
        for row in range(matrix.shape[0])
    ]


class QdrantDenseIndex(_QdrantCollection):
    """Dense latent vectors (cosine: stored L2-normalised, scored by dot product). `search(..., exact=True)`
    scans every vector; `exact=False` uses Qdrant's HNSW graph (approximate)."""

    DENSE = (LATENT,)

    def add(self, ids, vectors, payload: Sequence[dict] | None = None) -> None:
        latent = _unit_rows(_to_dense_numpy(vectors, "vectors"))
        self._ensure_collection({LATENT: latent.shape[1]})
        self._upsert(self._points(ids, {LATENT: latent.tolist()}, payload))

    def search(self, query_vectors, k: int, filter=None, *, exact: bool = True, hnsw_ef: int | None = None):
        """Top-`k` by cosine: an exact scan by default; `exact=False` walks the HNSW graph (when the collection
        has one) with beam width `hnsw_ef` (the engine's default when None; larger is slower and finds more of
        the exact top-k, measured in `benchmarks/RESULTS_galleries.md`)."""
        if hnsw_ef is not None and (isinstance(hnsw_ef, bool) or not isinstance(hnsw_ef, int) or hnsw_ef < 1):
            raise ValueError(f"`hnsw_ef` must be a positive int or None, got {hnsw_ef!r}")
        queries = _unit_rows(_to_dense_numpy(query_vectors, "query_vectors"))
        requests = [Request(limit=k, query=Nearest(LATENT, row.tolist()), exact=exact, with_payload=True,
                            hnsw_ef=hnsw_ef) for row in queries]
        return self._ids_of(self.engine.query_batch(requests, self.engine.filter(filter)), k)


class QdrantSparseIndex(_QdrantCollection):
    """Sparse lexicon vectors, normalised and pruned as `SparseLexiconIndex` does (same arguments), scored
    exactly by Qdrant's inverted index."""

    SPARSE = (LEXICON,)

    def __init__(self, location=None, *, vocab_size=None, top_k=None, threshold=None, query_top_k=None,
                 query_threshold=None, normalize="before_pruning", **engine_options) -> None:
        super().__init__(location, **engine_options)
        self.rules = SparseLexiconIndex(
            vocab_size, top_k=top_k, threshold=threshold, query_top_k=query_top_k, query_threshold=query_threshold,
            normalize=normalize,
        )

    def _documents(self, vectors, name="vectors") -> sp.csr_matrix:
        return self.rules._prepare(vectors, self.rules.top_k, self.rules.threshold, name)

    def _queries(self, vectors) -> sp.csr_matrix:
        return self.rules._prepare(vectors, self.rules.query_top_k, self.rules.query_threshold, "query_vectors")

    def add(self, ids, vectors, payload: Sequence[dict] | None = None) -> None:
        lexicon = self._documents(vectors)
        self._ensure_collection({})
        self._upsert(self._points(ids, {LEXICON: _sparse_rows(lexicon)}, payload))

    def search(self, query_vectors, k: int, filter=None):
        requests = [Request(limit=k, query=Nearest(LEXICON, row), with_payload=True) for row in _sparse_rows(self._queries(query_vectors))]
        return self._ids_of(self.engine.query_batch(requests, self.engine.filter(filter)), k)


class QdrantFusedIndex(QdrantSparseIndex):
    """UNIFY's exact fused search in Qdrant: `w_latent * latent cosine + w_lexicon * lexicon score`.

    Args:
        fusion_weights: `(w_latent, w_lexicon)` (UNIFY: 1:1, `model.config.fusion_weights`).
        depth: candidates per side in the first round; max_depth: the deepest lists tried for unproven queries.
        Lexicon pruning arguments as `SparseLexiconIndex`; engine arguments as the module docstring says.
    """

    DENSE = (LATENT,)
    SPARSE = (LEXICON,)

    def __init__(self, location=None, *, fusion_weights=(1.0, 1.0), depth: int = 100, max_depth: int = 4096, **options):
        super().__init__(location, **options)
        weights = tuple(float(weight) for weight in fusion_weights)
        if len(weights) != 2 or not all(np.isfinite(weight) and weight >= 0 for weight in weights):
            raise ValueError(f"`fusion_weights` must be two finite numbers >= 0, got {fusion_weights!r}")
        self.fusion_weights, self.depth, self.max_depth = weights, int(depth), int(max_depth)

    def add(self, ids, vectors, payload: Sequence[dict] | None = None) -> None:
        """Add `vectors = (latent [N, d], lexicon [N, V])` under `ids`, with an optional payload dict per document."""
        latent, lexicon = vectors
        latent = _unit_rows(_to_dense_numpy(latent, "vectors[0]"))
        lexicon = self._documents(lexicon, "vectors[1]")
        if latent.shape[0] != lexicon.shape[0]:
            raise ValueError(f"`vectors`: latent has {latent.shape[0]} rows but lexicon has {lexicon.shape[0]}")
        self._ensure_collection({LATENT: latent.shape[1]})
        self._upsert(self._points(ids, {LATENT: latent.tolist(), LEXICON: _sparse_rows(lexicon)}, payload))

    def _requests(self, latent_row, lexicon_row, k: int, depth: int, hnsw: bool) -> list[Request]:
        lists = [Request(limit=depth, query=Nearest(LATENT, latent_row), exact=not hnsw),
                 Request(limit=depth, query=Nearest(LEXICON, lexicon_row))]
        union = [Request(limit=2 * depth, query=Nearest(LATENT, latent_row), prefetch=lists, exact=True),
                 Request(limit=2 * depth, query=Nearest(LEXICON, lexicon_row), prefetch=lists)]
        fused = Request(limit=k, query=WeightedSum(self.fusion_weights), prefetch=union, with_payload=True)
        # The two lists again, on their own, for their tails (the threshold bound).
        return [fused, lists[0], lists[1]]

    def search(self, query_vectors, k: int, filter=None, *, exact: bool = True, depth: int | None = None,
               hnsw: bool = False, return_exact: bool = False):
        """Top-`k` per query by the exact fused score of the union of both candidate lists.

        `exact=True` (default): queries whose threshold bound fails are asked again with lists 4x deeper, up to
        `max_depth` (queries still unproven there are reported, not scored in full: the engine's gallery may be
        too large for that); `exact=False`: one round at `depth`. `hnsw=True` takes the latent list from Qdrant's
        HNSW graph (approximate: no bound holds, nothing is proven) instead of an exact scan. Returns
        `(ids, scores)` (and `exact [Q]`, what was proven, with `return_exact=True`).
        """
        latent, lexicon = query_vectors
        latent = _unit_rows(_to_dense_numpy(latent, "query_vectors[0]")).tolist()
        lexicon = _sparse_rows(self._queries(lexicon))
        if len(latent) != len(lexicon):
            raise ValueError(f"`query_vectors`: latent has {len(latent)} rows but lexicon has {len(lexicon)}")
        native_filter = self.engine.filter(filter)
        depth = max(int(depth or self.depth), k)
        results: list = [None] * len(latent)
        proven = np.zeros(len(latent), dtype=bool)
        pending = list(range(len(latent)))
        while pending:
            requests = [r for q in pending for r in self._requests(latent[q], lexicon[q], k, depth, hnsw)]
            answers = self.engine.query_batch(requests, native_filter)
            still = []
            for number, query in enumerate(pending):
                fused, latent_list, lexicon_list = answers[3 * number : 3 * number + 3]
                results[query] = fused
                if hnsw:
                    continue  # an approximate list bounds nothing
                if len(latent_list) < depth:  # the list holds every (filtered) document: nothing is outside it
                    proven[query] = True
                    continue
                lexicon_tail = lexicon_list[-1][1] if len(lexicon_list) >= depth else 0.0
                bound = threshold_bound(latent_list[-1][1], lexicon_tail, self.fusion_weights)
                proven[query] = len(fused) >= k and fused[k - 1][1] > bound
                if exact and not proven[query]:
                    still.append(query)
            if not exact or depth >= self.max_depth:
                break
            pending, depth = still, min(depth * 4, self.max_depth)
        ids, scores = self._ids_of(results, k)
        return (ids, scores, proven) if return_exact else (ids, scores)


class QdrantTMassIndex(_QdrantCollection):
    """T-MASS two-stage search in Qdrant: the mean of each video's frame embeddings (L2-normalised) is an
    indexed dense vector that proposes candidates; the frames `[F, D]` are stored as a multivector (float16,
    never indexed) and only the candidates' frames are fetched and scored exactly with
    `TMassModel.similarity_candidates`: memory grows with the candidates, not with the gallery."""

    DENSE = (TMASS_MEAN,)
    MULTI = (TMASS_FRAMES,)

    def add(self, ids, vectors, payload: Sequence[dict] | None = None) -> None:
        """Add `vectors = frame_embeds [N, F, D]` (`TMassModel.get_video_features(...).pooler_output`)."""
        frames = torch.as_tensor(vectors).detach().float().cpu()
        if frames.dim() != 3:
            raise ValueError(f"`vectors` must be frame embeddings [N, F, D], got shape {tuple(frames.shape)}")
        if not torch.isfinite(frames).all():
            raise ValueError("`vectors` holds NaN or infinite values")
        mean = torch.nn.functional.normalize(frames.mean(dim=1), dim=-1)
        self._ensure_collection({TMASS_MEAN: frames.shape[2], TMASS_FRAMES: frames.shape[2]})
        self._upsert(self._points(ids, {TMASS_MEAN: mean.tolist(), TMASS_FRAMES: frames.tolist()}, payload))

    def candidates(self, text_embeds: torch.Tensor, depth: int, filter=None, *, exact: bool = True) -> list[list[tuple]]:
        queries = torch.nn.functional.normalize(torch.as_tensor(text_embeds).float(), dim=-1)
        requests = [Request(limit=depth, query=Nearest(TMASS_MEAN, row.tolist()), exact=exact, with_payload=True) for row in queries]
        return self.engine.query_batch(requests, self.engine.filter(filter))

    def search(self, model, text_embeds: torch.Tensor, k: int, filter=None, *, candidate_depth: int = 100,
               exact_candidates: bool = True, **similarity_options):
        """Top-`k` videos per text by exact T-MASS score among `candidate_depth` mean-frame candidates.

        Args:
            model: a `TMassModel` (eval mode); text_embeds `[N_t, D]` (`get_text_features(...).pooler_output`).
            filter: payload filter applied to the candidates.
            similarity_options: `num_trials`, `noise`, `generator`, ... of `TMassModel.similarity_candidates`.

        Returns:
            `(ids [N_t, k'], scores [N_t, k'] float32)`, best first (rows padded with None / -inf when a filter
            leaves fewer than `k` videos).
        """
        text_embeds = torch.as_tensor(text_embeds)
        found = self.candidates(text_embeds, candidate_depth, filter, exact=exact_candidates)
        union = sorted({pid for row in found for pid, _, _ in row}, key=str)
        if not union:
            return self._ids_of([[] for _ in found], k)
        stored = self.engine.retrieve(union, [TMASS_FRAMES])
        column = {pid: number for number, pid in enumerate(union)}
        frames = torch.tensor(np.asarray([stored[_normalise_id(pid)][TMASS_FRAMES] for pid in union], dtype=np.float32))
        width = min(candidate_depth, max(len(row) for row in found))
        # Rows shorter than `width` (a filter) repeat their first candidate; the copies are dropped below.
        table = torch.tensor([[column[pid] for pid, _, _ in row] + [column[row[0][0]]] * (width - len(row)) if row else [0] * width
                              for row in found], dtype=torch.long)
        scores = model.similarity_candidates(text_embeds.to(frames.dtype), frames, table, **similarity_options)
        results = []
        for number, row in enumerate(found):
            exact_scores = scores[number, : len(row)].tolist()
            ranked = sorted(zip(row, exact_scores), key=lambda item: -item[1])
            results.append([(pid, score, payload) for (pid, _, payload), score in ranked])
        return self._ids_of(results, k)
