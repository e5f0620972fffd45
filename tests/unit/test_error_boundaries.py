"""Each service's errors are translated at its boundary into the loader's tree, the same way."""

from __future__ import annotations

import uuid

import aiokafka.errors
import pytest
import snowflake.connector.errors as sf_errors
from prometheus_client.parser import text_string_to_metric_families

from loader.consume.errors import kafka_errors
from loader.errors import (
    ConfigError,
    KafkaError,
    LoaderError,
    NotAppliedError,
    RegistryError,
    RunError,
    ToolError,
    WarehouseError,
)
from loader.metrics import EventMetrics, exposition, render
from loader.warehouse.connection import _translate
from loader.warehouse.sqs_loader import _warehouse_error_kind

pytestmark = pytest.mark.unit


def test_retriable_aiokafka_error_becomes_transient_kafka_error_naming_the_operation() -> None:
    """An error aiokafka marks retriable becomes a transient KafkaError that says what was being done."""
    cause = aiokafka.errors.KafkaConnectionError("broker down")
    with pytest.raises(KafkaError) as caught, kafka_errors("cannot read topic metadata"):
        raise cause
    assert caught.value.transient
    assert str(caught.value) == f"cannot read topic metadata: {cause}"
    assert caught.value.__cause__ is cause


def test_non_retriable_aiokafka_error_becomes_terminal_kafka_error() -> None:
    """An error aiokafka marks not retriable (a refusal) becomes a terminal KafkaError."""
    with pytest.raises(KafkaError) as caught, kafka_errors("cannot create topic t"):
        raise aiokafka.errors.TopicAuthorizationFailedError()
    assert not caught.value.transient
    assert str(caught.value).startswith("cannot create topic t: ")


@pytest.mark.parametrize(
    "cause",
    [aiokafka.errors.KafkaTimeoutError(), aiokafka.errors.KafkaError("Unable to get cluster metadata")],
)
def test_kafka_that_did_not_answer_is_transient(cause: aiokafka.errors.KafkaError) -> None:
    """A timeout and aiokafka's bare KafkaError (no broker answered) are transient though not retriable."""
    assert not cause.retriable
    with pytest.raises(KafkaError) as caught, kafka_errors("publishing"):
        raise cause
    assert caught.value.transient


def test_action_may_be_described_when_the_error_happens() -> None:
    """A callable action is read at the moment of the error (how many records were sent by then)."""
    sent = 0

    def send_three() -> None:
        nonlocal sent
        with kafka_errors(lambda: f"after {sent} records"):
            sent = 3
            raise aiokafka.errors.NodeNotReadyError()

    with pytest.raises(KafkaError, match="after 3 records"):
        send_three()


def test_other_errors_pass_through_unchanged() -> None:
    """Only aiokafka's errors are translated: the loader's own and everything else pass through."""
    ours = KafkaError("topic t does not exist", transient=False)
    with pytest.raises(KafkaError) as caught, kafka_errors("cannot read offsets"):
        raise ours
    assert caught.value is ours
    with pytest.raises(ValueError, match="x"), kafka_errors("cannot read offsets"):
        raise ValueError("x")


def test_translated_errors_are_counted_by_their_aiokafka_class() -> None:
    """With metrics, each translated error counts once in loader_errors_total{component="kafka"}."""
    event = f"ev_{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaError), kafka_errors("cannot read topic metadata", metrics=EventMetrics(event)):
        raise aiokafka.errors.NodeNotReadyError()
    counted = [
        sample.value
        for family in text_string_to_metric_families(render(exposition()).decode())
        for sample in family.samples
        if sample.name == "loader_errors_total"
        and sample.labels == {"event": event, "component": "kafka", "kind": "NodeNotReadyError"}
    ]
    assert counted == [1.0]


def test_snowflake_error_keeps_its_errno_sqlstate_and_class() -> None:
    """A connector error's code and SQLSTATE are attributes of its WarehouseError, not behind __context__."""
    cause = sf_errors.ProgrammingError(
        msg="Object 'T' does not exist or not authorized.", errno=2003, sqlstate="42S02"
    )
    error = _translate(cause, "statement failed (SELECT …)")
    assert isinstance(error, WarehouseError)
    assert (error.errno, error.sqlstate, error.origin) == (2003, "42S02", "ProgrammingError")
    assert not error.transient
    assert error.__context__ is None and error.__cause__ is None


def test_snowflake_error_without_a_code_has_none() -> None:
    """The connector's placeholders (-1, "n/a") and an OS error leave errno and sqlstate None."""
    error = _translate(sf_errors.OperationalError(msg="connection reset"), "cannot connect to Snowflake")
    assert (error.errno, error.sqlstate, error.origin) == (None, None, "OperationalError")
    assert error.transient
    error = _translate(ConnectionResetError("reset"), "cannot connect to Snowflake")
    assert (error.errno, error.sqlstate, error.origin) == (None, None, "ConnectionResetError")


def test_warehouse_error_kind_reads_the_attributes() -> None:
    """The metrics' kind is the Snowflake code, else the connector's class, else WarehouseError."""
    coded = _translate(sf_errors.ProgrammingError(msg="no", errno=2003, sqlstate="42S02"), "statement failed")
    assert _warehouse_error_kind(coded) == "2003"
    uncoded = _translate(sf_errors.OperationalError(msg="reset"), "cannot connect to Snowflake")
    assert _warehouse_error_kind(uncoded) == "OperationalError"
    assert _warehouse_error_kind(WarehouseError("pipe p still has pending files")) == "WarehouseError"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RegistryError("s: cannot reach the schema registry"), True),
        (NotAppliedError("no pipe recorded for e: run `loader pipes apply e`"), True),
        (ToolError("helm template failed"), False),
        (RunError("2 file(s) could not be loaded"), False),
    ],
)
def test_specific_classes_keep_the_marks_and_exit_code_of_the_bare_errors_they_replace(
    error: LoaderError, transient: bool
) -> None:
    """Each class that replaced a bare LoaderError has its transient mark and is no ConfigError (exit 1)."""
    assert error.transient is transient
    assert not isinstance(error, ConfigError)
