"""Domain errors: what the data layer raises. They know nothing of HTTP."""


# --8<-- [start:errors]
class InventoryError(Exception):
    """Base class: one table maps each subclass to a status code."""


class ItemNotFoundError(InventoryError):
    """No live item has this id (or one of these ids)."""

    def __init__(self, *item_ids: int) -> None:
        self.item_ids = sorted(item_ids)
        listed = ", ".join(map(str, self.item_ids))
        super().__init__(f"unknown or deleted items: {listed}")


class NotInTrashError(InventoryError):
    """No item with this id is in the trash."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} is not in the trash")


class NameTakenError(InventoryError):
    """A live item has this name."""

    def __init__(self, *names: str) -> None:
        self.names = sorted(names)
        listed = ", ".join(map(repr, self.names)) or "a name"
        super().__init__(f"already used by a live item: {listed}")


class VersionMismatchError(InventoryError):
    """The item changed since you read it (stale body `version`)."""

    def __init__(self, item_id: int, expected: int, current: int) -> None:
        self.current = current
        super().__init__(
            f"item {item_id} is at version {current}, not {expected}"
        )


class StaleItemsError(InventoryError):
    """Items changed since you read them (`expected_versions`)."""

    def __init__(self, *item_ids: int) -> None:
        self.item_ids = sorted(item_ids)
        listed = ", ".join(map(str, self.item_ids))
        super().__init__(f"changed since you read them: {listed}")


class NotEnoughStockError(InventoryError):
    """Not enough stock for an item."""

    def __init__(self, item_id: int, wanted: int) -> None:
        super().__init__(f"item {item_id} has fewer than {wanted} in stock")


class OrderNotFoundError(InventoryError):
    """No order has this id."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"unknown order: {order_id}")


class BadCursorError(InventoryError):
    """The cursor is empty, altered, or made for another query."""


# --8<-- [end:errors]
