"""parse_perf_detail reads the vendor PERF_DETAIL table by column positions."""
# ruff: noqa: E501 - the sample keeps the vendor table's real line widths

from rknnlink.runtime.perf import parse_perf_detail

SAMPLE = """\
---------------------------------------------------------------------------------------------------
                             Network Layer Information Table
---------------------------------------------------------------------------------------------------
ID   OpType           DataType Target InputShape            OutputShape   Cycles(DDR/NPU/Total)  Time(us)  MacUsage(%)  WorkLoad(0/1/2)   RW(KB)   FullName
---------------------------------------------------------------------------------------------------
1    InputOperator    UINT8    CPU    \\                     (1,3,224,224) 0/0/0                  7         \\            0.0%/0.0%/0.0%    0        InputOperator:input
2    ConvExSwish      INT8     NPU    (1,3,224,224),(16,3)  (1,16,112,112) 1/2/3                 233                     100.0%/0.0%/0.0%  147.5    Conv:/m/conv
---------------------------------------------------------------------------------------------------
Total Operator Elapsed Per Frame Time(us): 240
Total Memory Read/Write Per Frame Size(KB): 147.5
---------------------------------------------------------------------------------------------------
"""


def test_rows_and_total():
    rows, total = parse_perf_detail(SAMPLE)
    assert total == 240
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[1]["op_type"] == "ConvExSwish" and rows[1]["time_us"] == 233.0 and rows[1]["rw_kb"] == 147.5
    assert rows[1]["mac_usage"] == "" and rows[1]["full_name"] == "Conv:/m/conv"
    assert rows[0]["output_shape"] == "(1,3,224,224)" and rows[0]["workload"] == "0.0%/0.0%/0.0%"


def test_empty_text():
    assert parse_perf_detail("") == ([], 0)
