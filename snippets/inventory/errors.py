"""Domain errors: what the data layer raises. They know nothing of HTTP."""


# --8<-- [start:errors]
class InventoryError(Exception):
    """Base class: the routers map each subclass to a status code."""


class ItemNotFound(InventoryError):
    def __init__(self, *item_ids: int) -> None:
        self.item_ids = sorted(item_ids)
        listed = ", ".join(map(str, self.item_ids))
        super().__init__(f"unknown or deleted items: {listed}")


class NotInTrash(InventoryError):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} is not in the trash")


class NameTaken(InventoryError):
    def __init__(self, *names: str) -> None:
        self.names = sorted(names)
        listed = ", ".join(map(repr, self.names)) or "a name"
        super().__init__(f"already used by a live item: {listed}")


class VersionMismatch(InventoryError):
    def __init__(self, item_id: int, expected: int, current: int) -> None:
        self.current = current
        super().__init__(
            f"item {item_id} is at version {current}, not {expected}"
        )


class NotEnoughStock(InventoryError):
    def __init__(self, item_id: int, wanted: int) -> None:
        super().__init__(f"item {item_id} has fewer than {wanted} in stock")


class OrderNotFound(InventoryError):
    def __init__(self, order_id: int) -> None:
        super().__init__(f"unknown order: {order_id}")


class BadCursor(InventoryError):
    pass


# --8<-- [end:errors]
