-- A counter of changes to the hosts table, moved by triggers in the changing transaction: each
-- process keeps the host list in memory and reads this one row to learn whether it still
-- holds (a create at 1,000 hosts read and rebuilt every host row).
CREATE TABLE host_changes (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO host_changes (id, generation) VALUES (1, 0);
CREATE TRIGGER host_changes_insert AFTER INSERT ON hosts BEGIN
    UPDATE host_changes SET generation = generation + 1;
END;
CREATE TRIGGER host_changes_update AFTER UPDATE ON hosts BEGIN
    UPDATE host_changes SET generation = generation + 1;
END;
CREATE TRIGGER host_changes_delete AFTER DELETE ON hosts BEGIN
    UPDATE host_changes SET generation = generation + 1;
END;
